//! Reading one entity's facts from SQL (L3). The SQL text is the same for SQLite and PostgreSQL.
//! Unknown values in closed-set columns fail the load (closed): the decision path turns that into
//! an error, never into an allow.

use sqlx::Row;
use uuid::Uuid;

use super::{Facts, GenerationFacts, ProjectFacts, TeamFacts, UserFacts};
use crate::db::{Database, Flag, db_error, parse_column};
use crate::error::{Error, Result};
use crate::ids::{EntityKind, EntityRef, parse_uuid};

/// Load the facts of `key`. Fixed-id kinds (`Anonymous`, `Platform`) have none to load.
pub async fn load(db: &Database, key: EntityRef) -> Result<Facts> {
    let Some(id) = key.uuid() else {
        return Ok(Facts::Missing);
    };
    let id_text = id.hyphenated().to_string();
    let pool = db.pool();
    match key.kind {
        EntityKind::User => {
            let rows = sqlx::query(
                "SELECT u.suspended, u.break_glass, u.platform_admin, m.team_id, m.role \
                 FROM users u LEFT JOIN team_members m ON m.user_id = u.id \
                 WHERE u.id = $1 ORDER BY m.team_id",
            )
            .bind(&id_text)
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
            let Some(first) = rows.first() else {
                return Ok(Facts::Missing);
            };
            let mut memberships = Vec::new();
            for row in &rows {
                let team: Option<String> = row.try_get(3).map_err(db_error)?;
                let role: Option<String> = row.try_get(4).map_err(db_error)?;
                if let (Some(team), Some(role)) = (team, role) {
                    memberships.push((uuid_column(&team)?, parse_column("role", &role)?));
                }
            }
            Ok(Facts::User(UserFacts {
                suspended: flag(first, 0)?,
                break_glass: flag(first, 1)?,
                platform_admin: flag(first, 2)?,
                memberships,
            }))
        }
        EntityKind::CreditAccount => {
            let exists = sqlx::query("SELECT id FROM users WHERE id = $1")
                .bind(&id_text)
                .fetch_optional(pool)
                .await
                .map_err(db_error)?;
            Ok(match exists {
                Some(_) => Facts::CreditAccount { owner: id },
                None => Facts::Missing,
            })
        }
        EntityKind::Team => {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM team_members m WHERE m.team_id = t.id AND m.role = 'owner') \
                 FROM teams t WHERE t.id = $1",
            )
            .bind(&id_text)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
            match row {
                None => Ok(Facts::Missing),
                Some(row) => Ok(Facts::Team(TeamFacts {
                    owner_count: row.try_get::<i64, _>(0).map_err(db_error)?,
                })),
            }
        }
        EntityKind::Project => {
            let rows = sqlx::query(
                "SELECT p.owner_id, p.parent_id, p.visibility, p.inherit_access, p.home_team_id, \
                        l.team_id, l.access \
                 FROM projects p LEFT JOIN project_teams l ON l.project_id = p.id \
                 WHERE p.id = $1 ORDER BY l.team_id",
            )
            .bind(&id_text)
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
            let Some(first) = rows.first() else {
                return Ok(Facts::Missing);
            };
            let mut links = Vec::new();
            for row in &rows {
                let team: Option<String> = row.try_get(5).map_err(db_error)?;
                let access: Option<String> = row.try_get(6).map_err(db_error)?;
                if let (Some(team), Some(access)) = (team, access) {
                    links.push((uuid_column(&team)?, parse_column("access", &access)?));
                }
            }
            let visibility: String = first.try_get(2).map_err(db_error)?;
            Ok(Facts::Project(ProjectFacts {
                owner: uuid_column(&first.try_get::<String, _>(0).map_err(db_error)?)?,
                parent: optional_uuid(first.try_get(1).map_err(db_error)?)?,
                visibility: parse_column("visibility", &visibility)?,
                inherit_access: flag(first, 3)?,
                home_team: optional_uuid(first.try_get(4).map_err(db_error)?)?,
                links,
            }))
        }
        EntityKind::Generation => {
            let row = sqlx::query(
                "SELECT owner_id, project_id, parent_generation_id, status \
                 FROM generations WHERE id = $1",
            )
            .bind(&id_text)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
            let Some(row) = row else {
                return Ok(Facts::Missing);
            };
            let status: String = row.try_get(3).map_err(db_error)?;
            Ok(Facts::Generation(GenerationFacts {
                owner: uuid_column(&row.try_get::<String, _>(0).map_err(db_error)?)?,
                project: uuid_column(&row.try_get::<String, _>(1).map_err(db_error)?)?,
                parent: optional_uuid(row.try_get(2).map_err(db_error)?)?,
                status: parse_column("status", &status)?,
            }))
        }
        EntityKind::MediaFile => {
            let owner = owner_of(
                db,
                "SELECT owner_id FROM media_files WHERE id = $1",
                &id_text,
            )
            .await?;
            Ok(owner.map_or(Facts::Missing, |owner| Facts::MediaFile { owner }))
        }
        EntityKind::ChatSession => {
            let owner = owner_of(
                db,
                "SELECT owner_id FROM chat_sessions WHERE id = $1",
                &id_text,
            )
            .await?;
            Ok(owner.map_or(Facts::Missing, |owner| Facts::ChatSession { owner }))
        }
        EntityKind::StyleStack => {
            let row =
                sqlx::query("SELECT owner_id, is_public, builtin FROM style_stacks WHERE id = $1")
                    .bind(&id_text)
                    .fetch_optional(pool)
                    .await
                    .map_err(db_error)?;
            let Some(row) = row else {
                return Ok(Facts::Missing);
            };
            Ok(Facts::StyleStack {
                owner: optional_uuid(row.try_get(0).map_err(db_error)?)?,
                public: flag(&row, 1)?,
                builtin: flag(&row, 2)?,
            })
        }
        EntityKind::Anonymous | EntityKind::Platform => Ok(Facts::Missing),
    }
}

async fn owner_of(db: &Database, sql: &'static str, id: &str) -> Result<Option<Uuid>> {
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .map_err(db_error)?;
    row.map(|row| uuid_column(&row.try_get::<String, _>(0).map_err(db_error)?))
        .transpose()
}

fn flag(row: &sqlx::any::AnyRow, index: usize) -> Result<bool> {
    row.try_get::<Flag, _>(index).map(|f| f.0).map_err(db_error)
}

fn uuid_column(text: &str) -> Result<Uuid> {
    parse_uuid(text).map_err(|_| Error::Database("malformed id in the database".into()))
}

fn optional_uuid(text: Option<String>) -> Result<Option<Uuid>> {
    text.as_deref().map(uuid_column).transpose()
}
