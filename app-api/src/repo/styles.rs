//! Style stacks in SQL: the built-in library (seeded idempotently), user stacks, candidates for
//! lists (the PDP decides which are shown) and usage counters.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;
use velro_engine::db::Flag;

use super::{Repo, json_col, opt_uuid_col, ts, uuid_col};
use crate::auth::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::styles::BUILTINS;

/// A style stack.
#[derive(Debug, Clone, Serialize)]
pub struct StyleRow {
    /// Id.
    pub id: Uuid,
    /// Owner (none for built-ins).
    pub owner_id: Option<Uuid>,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// `basic | enhanced | signature`.
    pub tier: String,
    /// Visible to everyone.
    pub public: bool,
    /// Part of the built-in library.
    pub builtin: bool,
    /// What it does to a prompt.
    pub definition: Value,
    /// How often it was applied.
    pub usage_count: i64,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Updated, RFC 3339.
    pub updated_at: String,
}

const COLUMNS: &str = "id, owner_id, name, description, tier, is_public, builtin, definition, usage_count, created_at, updated_at";

impl StyleRow {
    fn from_row(row: &sqlx::any::AnyRow) -> ApiResult<Self> {
        Ok(Self {
            id: uuid_col(row, "id")?,
            owner_id: opt_uuid_col(row, "owner_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            tier: row.try_get("tier")?,
            public: row.try_get::<Flag, _>("is_public")?.0,
            builtin: row.try_get::<Flag, _>("builtin")?.0,
            definition: json_col(row, "definition")?,
            usage_count: row.try_get("usage_count")?,
            created_at: ts(row.try_get("created_at")?),
            updated_at: ts(row.try_get("updated_at")?),
        })
    }
}

impl Repo {
    /// Insert the built-in library where missing (safe to run on every start, by every replica).
    pub async fn seed_builtin_styles(&self) -> ApiResult<()> {
        for b in BUILTINS {
            let definition = serde_json::to_string(&b.definition())
                .map_err(|e| ApiError::Internal(format!("style definition: {e}")))?;
            sqlx::query(
                "INSERT INTO style_stacks (id, owner_id, name, description, tier, is_public, builtin, definition, usage_count, created_at, updated_at) \
                 VALUES ($1, NULL, $2, $3, $4, $5, $6, $7, 0, $8, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(b.id)
            .bind(b.name)
            .bind(b.description)
            .bind(b.tier)
            .bind(true)
            .bind(true)
            .bind(definition)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        }
        Ok(())
    }

    /// Candidates a user may see: their own, public and built-in stacks (`None`: anonymous).
    pub async fn style_candidates(
        &self,
        user: Option<Uuid>,
        tier: Option<&str>,
    ) -> ApiResult<Vec<StyleRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM style_stacks WHERE (owner_id = $1 OR is_public = $2 OR builtin = $2) \
             AND ($3 = '' OR tier = $3) ORDER BY builtin DESC, id LIMIT 500"
        )))
        .bind(user.map_or_else(String::new, |u| u.to_string()))
        .bind(true)
        .bind(tier.unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(StyleRow::from_row).collect()
    }

    /// One stack.
    pub async fn style(&self, id: Uuid) -> ApiResult<Option<StyleRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM style_stacks WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(StyleRow::from_row).transpose()
    }

    /// Create a user's stack.
    pub async fn create_style(
        &self,
        owner: Uuid,
        name: &str,
        description: &str,
        tier: &str,
        public: bool,
        definition: &Value,
    ) -> ApiResult<Uuid> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO style_stacks (id, owner_id, name, description, tier, is_public, builtin, definition, usage_count, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9)",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(name)
        .bind(description)
        .bind(tier)
        .bind(public)
        .bind(false)
        .bind(definition.to_string())
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// Update a stack's fields (each optional).
    pub async fn update_style(
        &self,
        id: Uuid,
        name: Option<&str>,
        description: Option<&str>,
        tier: Option<&str>,
        public: Option<bool>,
        definition: Option<&Value>,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE style_stacks SET name = COALESCE($1, name), description = COALESCE($2, description), \
             tier = COALESCE($3, tier), definition = COALESCE($4, definition), \
             is_public = COALESCE($5, is_public), updated_at = $6 WHERE id = $7",
        )
        .bind(name.map(str::to_owned))
        .bind(description.map(str::to_owned))
        .bind(tier.map(str::to_owned))
        .bind(definition.map(Value::to_string))
        .bind(public)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Delete a stack (generations keep their prompt; their reference is cleared).
    pub async fn delete_style(&self, id: Uuid) -> ApiResult<()> {
        sqlx::query("DELETE FROM style_stacks WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Count one use.
    pub async fn count_style_use(&self, id: Uuid) -> ApiResult<()> {
        sqlx::query("UPDATE style_stacks SET usage_count = usage_count + 1 WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
