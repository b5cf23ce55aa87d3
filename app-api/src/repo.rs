//! The API's SQL: one implementation for SQLite and PostgreSQL (`$N` parameters, text UUIDs,
//! millisecond times, `Flag` booleans). Rows are facts; nothing here decides access. Writes that
//! change decisions are logged to `authz_changes` by the database's triggers in the same
//! transaction, so the PDP sees them; `revision()` after a commit is the write's consistency token.
//! Every multi-statement write is one transaction that starts with a write, so SQLite takes its
//! lock up front instead of failing an upgrade.

pub mod chat;
pub mod credits;
pub mod styles;
pub mod uploads;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use uuid::Uuid;
use velro_engine::db::{Database, Flag};

use crate::auth::now_ms;
use crate::error::{ApiError, ApiResult};

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn uuid_col(row: &AnyRow, column: &str) -> ApiResult<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|_| ApiError::Internal(format!("bad uuid in {column}")))
}

fn opt_uuid_col(row: &AnyRow, column: &str) -> ApiResult<Option<Uuid>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| Uuid::parse_str(&t))
        .transpose()
        .map_err(|_| ApiError::Internal(format!("bad uuid in {column}")))
}

fn json_col(row: &AnyRow, column: &str) -> ApiResult<Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| ApiError::Internal(format!("bad JSON in {column}")))
}

/// Whether a database error is a uniqueness violation.
fn unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Append the ledger row of a balance change already applied to `user` in `tx`, with the balance
/// after it; returns that balance. Every credit movement goes through here.
async fn record_ledger(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: Uuid,
    kind: &str,
    amount: i64,
    reference: &str,
    now: i64,
) -> ApiResult<i64> {
    let balance: i64 = sqlx::query("SELECT credits FROM users WHERE id = $1")
        .bind(user.to_string())
        .fetch_one(&mut **tx)
        .await?
        .try_get("credits")?;
    sqlx::query(
        "INSERT INTO credit_transactions (id, user_id, kind, amount, balance_after, reference, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(user.to_string())
    .bind(kind)
    .bind(amount)
    .bind(balance)
    .bind(reference)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(balance)
}

/// `$1, $2, …` for `n` parameters starting at `from`.
fn params(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UserRow {
    /// Id.
    pub id: Uuid,
    /// Email (normalized).
    pub email: String,
    /// Display name.
    pub full_name: String,
    /// Credit balance.
    pub credits: i64,
    /// Free-form settings.
    pub settings: Value,
    /// Created, RFC 3339.
    pub created_at: String,
    #[serde(skip)]
    pub(crate) password_hash: String,
}

impl UserRow {
    fn from_row(row: &AnyRow) -> ApiResult<Self> {
        Ok(Self {
            id: uuid_col(row, "id")?,
            email: row.try_get("email")?,
            full_name: row.try_get("full_name")?,
            credits: row.try_get("credits")?,
            settings: json_col(row, "settings")?,
            created_at: ts(row.try_get("created_at")?),
            password_hash: row.try_get("password_hash")?,
        })
    }
}

const USER_COLUMNS: &str = "id, email, full_name, credits, settings, created_at, password_hash";

/// A stored refresh token.
#[derive(Debug, Clone)]
pub struct RefreshRow {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Rotation family.
    pub family_id: Uuid,
    /// Expiry, ms.
    pub expires_at: i64,
    /// Whether it was already used or revoked.
    pub spent: bool,
}

/// A team.
#[derive(Debug, Clone, Serialize)]
pub struct TeamRow {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Creator.
    pub created_by: Uuid,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Updated, RFC 3339.
    pub updated_at: String,
}

impl TeamRow {
    fn from_row(row: &AnyRow) -> ApiResult<Self> {
        Ok(Self {
            id: uuid_col(row, "id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            created_by: uuid_col(row, "created_by")?,
            created_at: ts(row.try_get("created_at")?),
            updated_at: ts(row.try_get("updated_at")?),
        })
    }
}

/// A team member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberRow {
    /// User id.
    pub user_id: Uuid,
    /// Email.
    pub email: String,
    /// Name.
    pub full_name: String,
    /// Team role.
    pub role: String,
    /// Joined, RFC 3339.
    pub joined_at: String,
}

/// A pending invitation.
#[derive(Debug, Clone)]
pub struct InvitationRow {
    /// Id.
    pub id: Uuid,
    /// Team.
    pub team_id: Uuid,
    /// Invited email.
    pub email: String,
    /// Role granted on acceptance.
    pub role: String,
    /// Expiry, ms.
    pub expires_at: i64,
    /// Whether it was accepted already.
    pub accepted: bool,
}

/// A project.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectRow {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: Value,
    /// Visibility.
    pub visibility: String,
    /// Home team.
    pub team_id: Option<Uuid>,
    /// Parent project.
    pub parent_id: Option<Uuid>,
    /// Whether ancestors' team links apply.
    pub inherit_access: bool,
    /// Team links.
    pub teams: Vec<LinkRow>,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Updated, RFC 3339.
    pub updated_at: String,
}

/// A team link of a project.
#[derive(Debug, Clone, Serialize)]
pub struct LinkRow {
    /// Team.
    pub team_id: Uuid,
    /// `read`, `write` or `admin`.
    pub access: String,
}

const PROJECT_COLUMNS: &str = "id, owner_id, name, description, tags, visibility, home_team_id, parent_id, inherit_access, created_at, updated_at";

impl ProjectRow {
    fn from_row(row: &AnyRow) -> ApiResult<Self> {
        Ok(Self {
            id: uuid_col(row, "id")?,
            owner_id: uuid_col(row, "owner_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            tags: json_col(row, "tags")?,
            visibility: row.try_get("visibility")?,
            team_id: opt_uuid_col(row, "home_team_id")?,
            parent_id: opt_uuid_col(row, "parent_id")?,
            inherit_access: row.try_get::<Flag, _>("inherit_access")?.0,
            teams: Vec::new(),
            created_at: ts(row.try_get("created_at")?),
            updated_at: ts(row.try_get("updated_at")?),
        })
    }
}

/// A generation.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationRow {
    /// Id.
    pub id: Uuid,
    /// Creator.
    pub owner_id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// Lineage parent.
    pub parent_generation_id: Option<Uuid>,
    /// Model.
    pub model_id: String,
    /// Prompt.
    pub prompt: String,
    /// Negative prompt.
    pub negative_prompt: String,
    /// Validated parameters.
    pub parameters: Value,
    /// The style stack applied to the prompt.
    pub style_stack_id: Option<Uuid>,
    /// `pending | processing | completed | failed | cancelled`.
    pub status: String,
    /// 0 to 100.
    pub progress: i64,
    /// Credits charged (0 after a refund).
    pub credits_charged: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// Favorite flag.
    pub favorite: bool,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Updated, RFC 3339.
    pub updated_at: String,
    /// Completed, RFC 3339.
    pub completed_at: Option<String>,
}

const GENERATION_COLUMNS: &str = "id, owner_id, project_id, parent_generation_id, model_id, prompt, negative_prompt, parameters, style_stack_id, status, progress, credits_charged, error, favorite, created_at, updated_at, completed_at";

impl GenerationRow {
    fn from_row(row: &AnyRow) -> ApiResult<Self> {
        Ok(Self {
            id: uuid_col(row, "id")?,
            owner_id: uuid_col(row, "owner_id")?,
            project_id: uuid_col(row, "project_id")?,
            parent_generation_id: opt_uuid_col(row, "parent_generation_id")?,
            model_id: row.try_get("model_id")?,
            prompt: row.try_get("prompt")?,
            negative_prompt: row.try_get("negative_prompt")?,
            parameters: json_col(row, "parameters")?,
            style_stack_id: opt_uuid_col(row, "style_stack_id")?,
            status: row.try_get("status")?,
            progress: row.try_get("progress")?,
            credits_charged: row.try_get("credits_charged")?,
            error: row.try_get("error")?,
            favorite: row.try_get::<Flag, _>("favorite")?.0,
            created_at: ts(row.try_get("created_at")?),
            updated_at: ts(row.try_get("updated_at")?),
            completed_at: row.try_get::<Option<i64>, _>("completed_at")?.map(ts),
        })
    }
}

/// What a new generation needs.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    /// Id.
    pub id: Uuid,
    /// Creator.
    pub owner_id: Uuid,
    /// Project.
    pub project_id: Uuid,
    /// Lineage parent.
    pub parent_generation_id: Option<Uuid>,
    /// Model.
    pub model_id: String,
    /// Prompt.
    pub prompt: String,
    /// Negative prompt.
    pub negative_prompt: String,
    /// Validated parameters.
    pub parameters: Value,
    /// Price.
    pub cost: i64,
    /// The style stack applied to the prompt.
    pub style_stack_id: Option<Uuid>,
    /// Client's idempotency key.
    pub idempotency_key: Option<String>,
}

/// Outcome of creating a generation.
#[derive(Debug)]
pub enum Created {
    /// A new generation, charged.
    New(GenerationRow),
    /// The idempotency key was used before: the earlier generation.
    Replay(GenerationRow),
}

/// A stored media file.
#[derive(Debug, Clone)]
pub struct MediaRow {
    /// Content type.
    pub content_type: String,
    /// Size.
    pub size_bytes: i64,
}

/// The repository. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Repo {
    db: Database,
    last_write: Arc<AtomicI64>,
}

impl Repo {
    /// Over a migrated database.
    pub fn new(db: Database) -> Self {
        Self {
            db,
            last_write: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Record that this process committed a write; returns the data revision it is visible at.
    /// Later requests to this instance ask the PDP to be at least that fresh.
    pub async fn wrote(&self) -> ApiResult<i64> {
        let revision = self.revision().await?;
        self.last_write.fetch_max(revision, Ordering::Relaxed);
        Ok(revision)
    }

    /// The data revision of this process's latest recorded write (0 if none).
    pub fn last_write(&self) -> i64 {
        self.last_write.load(Ordering::Relaxed)
    }

    fn pool(&self) -> &AnyPool {
        self.db.pool()
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The data revision after the caller's committed write.
    pub async fn revision(&self) -> ApiResult<i64> {
        Ok(velro_engine::changes::current_revision(&self.db).await?)
    }

    // ---------------------------------------------------------------------------------- users

    /// Register a user with a signup grant; `EMAIL_TAKEN` when the email exists.
    pub async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        full_name: &str,
        grant: i64,
    ) -> ApiResult<UserRow> {
        let id = Uuid::now_v7();
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, password_hash, full_name, credits, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(id.to_string())
        .bind(email)
        .bind(password_hash)
        .bind(full_name)
        .bind(grant)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if unique_violation(&e) => {
                return Err(ApiError::conflict(
                    "EMAIL_TAKEN",
                    "email already registered",
                ));
            }
            other => {
                other?;
            }
        }
        if grant > 0 {
            record_ledger(&mut tx, id, "grant", grant, "signup", now).await?;
        }
        tx.commit().await?;
        self.user(id)
            .await?
            .ok_or_else(|| ApiError::Internal("user vanished after insert".into()))
    }

    /// A user by id.
    pub async fn user(&self, id: Uuid) -> ApiResult<Option<UserRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(UserRow::from_row).transpose()
    }

    /// A user by normalized email.
    pub async fn user_by_email(&self, email: &str) -> ApiResult<Option<UserRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        )))
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(UserRow::from_row).transpose()
    }

    /// Update name and/or settings.
    pub async fn update_user(
        &self,
        id: Uuid,
        full_name: Option<&str>,
        settings: Option<&Value>,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE users SET full_name = COALESCE($1, full_name), settings = COALESCE($2, settings), \
             updated_at = $3 WHERE id = $4",
        )
        .bind(full_name.map(str::to_owned))
        .bind(settings.map(Value::to_string))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // --------------------------------------------------------------------------------- tokens

    /// Store a refresh token (by hash).
    pub async fn insert_refresh(
        &self,
        user: Uuid,
        family: Uuid,
        hash: &str,
        expires_at: i64,
    ) -> ApiResult<Uuid> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(family.to_string())
        .bind(hash)
        .bind(expires_at)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// A refresh token by hash.
    pub async fn refresh_by_hash(&self, hash: &str) -> ApiResult<Option<RefreshRow>> {
        let row = sqlx::query(
            "SELECT id, user_id, family_id, expires_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(RefreshRow {
                id: uuid_col(&row, "id")?,
                user_id: uuid_col(&row, "user_id")?,
                family_id: uuid_col(&row, "family_id")?,
                expires_at: row.try_get("expires_at")?,
                spent: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
            })
        })
        .transpose()
    }

    /// Rotate: spend `old` and store its successor, atomically. `false` when `old` was already
    /// spent (a concurrent or replayed use).
    pub async fn rotate_refresh(
        &self,
        old: &RefreshRow,
        new_hash: &str,
        expires_at: i64,
    ) -> ApiResult<bool> {
        let new_id = Uuid::now_v7();
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1, replaced_by = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(new_id.to_string())
        .bind(old.id.to_string())
        .execute(&mut *tx)
        .await?;
        if spent.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new_id.to_string())
        .bind(old.user_id.to_string())
        .bind(old.family_id.to_string())
        .bind(new_hash)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revoke every token of a family.
    pub async fn revoke_family(&self, family: Uuid) -> ApiResult<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(family.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Revoke an access token until it would have expired.
    pub async fn revoke_jti(&self, jti: &str, expires_at_secs: i64) -> ApiResult<()> {
        let inserted = sqlx::query("INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, $2)")
            .bind(jti)
            .bind(expires_at_secs.saturating_mul(1000))
            .execute(self.pool())
            .await;
        match inserted {
            Err(e) if unique_violation(&e) => Ok(()),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// Whether an access token was revoked.
    pub async fn jti_revoked(&self, jti: &str) -> ApiResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM revoked_jtis WHERE jti = $1")
            .bind(jti)
            .fetch_optional(self.pool())
            .await?
            .is_some())
    }

    /// Forget revocations of tokens that have expired anyway.
    pub async fn prune_revocations(&self) -> ApiResult<u64> {
        let now = now_ms();
        let jtis = sqlx::query("DELETE FROM revoked_jtis WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(jtis.rows_affected())
    }

    // ---------------------------------------------------------------------------------- teams

    /// Create a team with its creator as owner.
    pub async fn create_team(
        &self,
        owner: Uuid,
        name: &str,
        description: &str,
    ) -> ApiResult<TeamRow> {
        let id = Uuid::now_v7();
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO teams (id, name, description, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(description)
        .bind(owner.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.team(id)
            .await?
            .ok_or_else(|| ApiError::Internal("team vanished after insert".into()))
    }

    /// A team.
    pub async fn team(&self, id: Uuid) -> ApiResult<Option<TeamRow>> {
        let row = sqlx::query(
            "SELECT id, name, description, created_by, created_at, updated_at FROM teams WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(TeamRow::from_row).transpose()
    }

    /// Teams `user` is a member of (candidates; the caller confirms with the PDP).
    pub async fn teams_of(&self, user: Uuid) -> ApiResult<Vec<(TeamRow, String)>> {
        let rows = sqlx::query(
            "SELECT t.id, t.name, t.description, t.created_by, t.created_at, t.updated_at, m.role \
             FROM teams t JOIN team_members m ON m.team_id = t.id WHERE m.user_id = $1 ORDER BY t.id",
        )
        .bind(user.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((TeamRow::from_row(r)?, r.try_get("role")?)))
            .collect()
    }

    /// Rename or describe a team.
    pub async fn update_team(
        &self,
        id: Uuid,
        name: Option<&str>,
        description: Option<&str>,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE teams SET name = COALESCE($1, name), description = COALESCE($2, description), updated_at = $3 WHERE id = $4",
        )
        .bind(name.map(str::to_owned))
        .bind(description.map(str::to_owned))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Delete a team (its links and memberships cascade; projects lose their home team).
    pub async fn delete_team(&self, id: Uuid) -> ApiResult<()> {
        sqlx::query("DELETE FROM teams WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Members of a team.
    pub async fn members(&self, team: Uuid) -> ApiResult<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT u.id, u.email, u.full_name, m.role, m.joined_at FROM team_members m \
             JOIN users u ON u.id = m.user_id WHERE m.team_id = $1 ORDER BY m.joined_at, u.id",
        )
        .bind(team.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    user_id: uuid_col(r, "id")?,
                    email: r.try_get("email")?,
                    full_name: r.try_get("full_name")?,
                    role: r.try_get("role")?,
                    joined_at: ts(r.try_get("joined_at")?),
                })
            })
            .collect()
    }

    /// A member's role.
    pub async fn member_role(&self, team: Uuid, user: Uuid) -> ApiResult<Option<String>> {
        Ok(
            sqlx::query("SELECT role FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team.to_string())
                .bind(user.to_string())
                .fetch_optional(self.pool())
                .await?
                .map(|r| r.try_get::<String, _>("role"))
                .transpose()?,
        )
    }

    /// Add a member; `ALREADY_MEMBER` when they are one.
    pub async fn add_member(&self, team: Uuid, user: Uuid, role: &str) -> ApiResult<()> {
        let inserted = sqlx::query(
            "INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(team.to_string())
        .bind(user.to_string())
        .bind(role)
        .bind(now_ms())
        .execute(self.pool())
        .await;
        match inserted {
            Err(e) if unique_violation(&e) => Err(ApiError::conflict(
                "ALREADY_MEMBER",
                "the user is already a member",
            )),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// Change a member's role, only if it is still `expected` (the role the PDP decided on).
    pub async fn set_role(
        &self,
        team: Uuid,
        user: Uuid,
        expected: &str,
        role: &str,
    ) -> ApiResult<bool> {
        let updated = sqlx::query(
            "UPDATE team_members SET role = $1 WHERE team_id = $2 AND user_id = $3 AND role = $4",
        )
        .bind(role)
        .bind(team.to_string())
        .bind(user.to_string())
        .bind(expected)
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Remove a member, only if their role is still `expected`.
    pub async fn remove_member(&self, team: Uuid, user: Uuid, expected: &str) -> ApiResult<bool> {
        let deleted = sqlx::query(
            "DELETE FROM team_members WHERE team_id = $1 AND user_id = $2 AND role = $3",
        )
        .bind(team.to_string())
        .bind(user.to_string())
        .bind(expected)
        .execute(self.pool())
        .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Store an invitation (by token hash).
    pub async fn create_invitation(
        &self,
        team: Uuid,
        email: &str,
        role: &str,
        token_hash: &str,
        invited_by: Uuid,
        expires_at: i64,
    ) -> ApiResult<Uuid> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO team_invitations (id, team_id, email, role, token_hash, invited_by, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id.to_string())
        .bind(team.to_string())
        .bind(email)
        .bind(role)
        .bind(token_hash)
        .bind(invited_by.to_string())
        .bind(expires_at)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// An invitation by token hash.
    pub async fn invitation(&self, token_hash: &str) -> ApiResult<Option<InvitationRow>> {
        let row = sqlx::query(
            "SELECT id, team_id, email, role, expires_at, accepted_at FROM team_invitations WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(InvitationRow {
                id: uuid_col(&r, "id")?,
                team_id: uuid_col(&r, "team_id")?,
                email: r.try_get("email")?,
                role: r.try_get("role")?,
                expires_at: r.try_get("expires_at")?,
                accepted: r.try_get::<Option<i64>, _>("accepted_at")?.is_some(),
            })
        })
        .transpose()
    }

    /// Accept an invitation: mark it used and add the membership, atomically and once.
    pub async fn accept_invitation(&self, invitation: &InvitationRow, user: Uuid) -> ApiResult<()> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let marked = sqlx::query(
            "UPDATE team_invitations SET accepted_at = $1 WHERE id = $2 AND accepted_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(invitation.id.to_string())
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            return Err(ApiError::conflict(
                "INVITATION_USED",
                "the invitation was already used or has expired",
            ));
        }
        let inserted = sqlx::query(
            "INSERT INTO team_members (team_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(invitation.team_id.to_string())
        .bind(user.to_string())
        .bind(&invitation.role)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if unique_violation(&e) => {
                return Err(ApiError::conflict(
                    "ALREADY_MEMBER",
                    "you are already a member",
                ));
            }
            other => {
                other?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    // ------------------------------------------------------------------------------- projects

    /// Create a project.
    #[expect(
        clippy::too_many_arguments,
        reason = "one column per argument, all named at the call"
    )]
    pub async fn create_project(
        &self,
        owner: Uuid,
        name: &str,
        description: &str,
        tags: &Value,
        visibility: &str,
        team: Option<Uuid>,
        parent: Option<Uuid>,
        inherit_access: bool,
    ) -> ApiResult<Uuid> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO projects (id, owner_id, name, description, tags, visibility, home_team_id, parent_id, inherit_access, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(name)
        .bind(description)
        .bind(tags.to_string())
        .bind(visibility)
        .bind(team.map(|t| t.to_string()))
        .bind(parent.map(|p| p.to_string()))
        .bind(inherit_access)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// Projects by id, with their team links, in the order of `ids` (missing ones skipped).
    pub async fn projects(&self, ids: &[Uuid]) -> ApiResult<Vec<ProjectRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id IN ({})",
            params(1, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.to_string());
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut projects: Vec<ProjectRow> = rows
            .iter()
            .map(ProjectRow::from_row)
            .collect::<ApiResult<_>>()?;

        let sql = format!(
            "SELECT project_id, team_id, access FROM project_teams WHERE project_id IN ({}) ORDER BY team_id",
            params(1, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(self.pool()).await? {
            let project = uuid_col(&row, "project_id")?;
            if let Some(p) = projects.iter_mut().find(|p| p.id == project) {
                p.teams.push(LinkRow {
                    team_id: uuid_col(&row, "team_id")?,
                    access: row.try_get("access")?,
                });
            }
        }
        let order = |id: &Uuid| ids.iter().position(|x| x == id).unwrap_or(usize::MAX);
        projects.sort_by_key(|p| order(&p.id));
        Ok(projects)
    }

    /// One project.
    pub async fn project(&self, id: Uuid) -> ApiResult<Option<ProjectRow>> {
        Ok(self.projects(&[id]).await?.into_iter().next())
    }

    /// Child project ids (candidates).
    pub async fn subprojects(&self, parent: Uuid) -> ApiResult<Vec<Uuid>> {
        let rows = sqlx::query("SELECT id FROM projects WHERE parent_id = $1 ORDER BY id")
            .bind(parent.to_string())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| uuid_col(r, "id")).collect()
    }

    /// Update name, description and tags.
    pub async fn update_project(
        &self,
        id: Uuid,
        name: Option<&str>,
        description: Option<&str>,
        tags: Option<&Value>,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE projects SET name = COALESCE($1, name), description = COALESCE($2, description), \
             tags = COALESCE($3, tags), updated_at = $4 WHERE id = $5",
        )
        .bind(name.map(str::to_owned))
        .bind(description.map(str::to_owned))
        .bind(tags.map(Value::to_string))
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Change visibility and/or inheritance.
    pub async fn share_project(
        &self,
        id: Uuid,
        visibility: Option<&str>,
        inherit_access: Option<bool>,
    ) -> ApiResult<()> {
        if let Some(visibility) = visibility {
            sqlx::query("UPDATE projects SET visibility = $1, updated_at = $2 WHERE id = $3")
                .bind(visibility)
                .bind(now_ms())
                .bind(id.to_string())
                .execute(self.pool())
                .await?;
        }
        if let Some(inherit) = inherit_access {
            sqlx::query("UPDATE projects SET inherit_access = $1, updated_at = $2 WHERE id = $3")
                .bind(inherit)
                .bind(now_ms())
                .bind(id.to_string())
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Link a team at a cap (or change the cap).
    pub async fn link_team(&self, project: Uuid, team: Uuid, access: &str) -> ApiResult<()> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE project_teams SET access = $1 WHERE project_id = $2 AND team_id = $3",
        )
        .bind(access)
        .bind(project.to_string())
        .bind(team.to_string())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO project_teams (project_id, team_id, access) VALUES ($1, $2, $3)",
            )
            .bind(project.to_string())
            .bind(team.to_string())
            .bind(access)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Remove a team link; `false` when there was none.
    pub async fn unlink_team(&self, project: Uuid, team: Uuid) -> ApiResult<bool> {
        let deleted =
            sqlx::query("DELETE FROM project_teams WHERE project_id = $1 AND team_id = $2")
                .bind(project.to_string())
                .bind(team.to_string())
                .execute(self.pool())
                .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Delete a project (generations cascade; children lose their parent).
    pub async fn delete_project(&self, id: Uuid) -> ApiResult<()> {
        sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---------------------------------------------------------------------------- generations

    /// Create a generation and charge for it in one transaction: the balance update is
    /// conditional (`credits >= cost`), so concurrent creates can never overdraw or double-spend.
    /// A repeated idempotency key returns the earlier generation and charges nothing.
    pub async fn create_generation(&self, new: &NewGeneration) -> ApiResult<Created> {
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = self.generation_by_key(new.owner_id, key).await?
        {
            return Ok(Created::Replay(existing));
        }
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let charged = sqlx::query(
            "UPDATE users SET credits = credits - $1, updated_at = $2 WHERE id = $3 AND credits >= $1",
        )
        .bind(new.cost)
        .bind(now)
        .bind(new.owner_id.to_string())
        .execute(&mut *tx)
        .await?;
        if charged.rows_affected() != 1 {
            drop(tx);
            let balance = self.user(new.owner_id).await?.map_or(0, |u| u.credits);
            return Err(ApiError::InsufficientCredits {
                needed: new.cost,
                balance,
            });
        }
        let inserted = sqlx::query(
            "INSERT INTO generations (id, owner_id, project_id, parent_generation_id, model_id, prompt, negative_prompt, \
             parameters, status, progress, credits_charged, idempotency_key, created_at, updated_at, style_stack_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $10, $11, $11, $12)",
        )
        .bind(new.id.to_string())
        .bind(new.owner_id.to_string())
        .bind(new.project_id.to_string())
        .bind(new.parent_generation_id.map(|p| p.to_string()))
        .bind(&new.model_id)
        .bind(&new.prompt)
        .bind(&new.negative_prompt)
        .bind(new.parameters.to_string())
        .bind(new.cost)
        .bind(new.idempotency_key.clone())
        .bind(now)
        .bind(new.style_stack_id.map(|s| s.to_string()))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if unique_violation(&e) => {
                // A concurrent create with the same key won: nothing of ours is committed.
                drop(tx);
                let key = new.idempotency_key.as_deref().unwrap_or_default();
                return match self.generation_by_key(new.owner_id, key).await? {
                    Some(existing) => Ok(Created::Replay(existing)),
                    None => Err(ApiError::conflict(
                        "IDEMPOTENCY_CONFLICT",
                        "a concurrent request used this idempotency key",
                    )),
                };
            }
            other => {
                other?;
            }
        }
        let reference = format!("generation:{}", new.id);
        record_ledger(
            &mut tx,
            new.owner_id,
            "generation",
            -new.cost,
            &reference,
            now,
        )
        .await?;
        tx.commit().await?;
        let row = self
            .generation(new.id)
            .await?
            .ok_or_else(|| ApiError::Internal("generation vanished after insert".into()))?;
        Ok(Created::New(row))
    }

    async fn generation_by_key(&self, owner: Uuid, key: &str) -> ApiResult<Option<GenerationRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {GENERATION_COLUMNS} FROM generations WHERE owner_id = $1 AND idempotency_key = $2"
        )))
        .bind(owner.to_string())
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(GenerationRow::from_row).transpose()
    }

    /// A generation.
    pub async fn generation(&self, id: Uuid) -> ApiResult<Option<GenerationRow>> {
        Ok(self.generations(&[id]).await?.into_iter().next())
    }

    /// Generations by id, in the order of `ids`.
    pub async fn generations(&self, ids: &[Uuid]) -> ApiResult<Vec<GenerationRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {GENERATION_COLUMNS} FROM generations WHERE id IN ({})",
            params(1, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.to_string());
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut generations: Vec<GenerationRow> = rows
            .iter()
            .map(GenerationRow::from_row)
            .collect::<ApiResult<_>>()?;
        let order = |id: &Uuid| ids.iter().position(|x| x == id).unwrap_or(usize::MAX);
        generations.sort_by_key(|g| order(&g.id));
        Ok(generations)
    }

    /// Generation ids of a project after `cursor`, ascending (candidates).
    pub async fn project_generation_ids(
        &self,
        project: Uuid,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> ApiResult<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id FROM generations WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(project.to_string())
        .bind(cursor.map_or_else(String::new, |c| c.to_string()))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| uuid_col(r, "id")).collect()
    }

    /// Move a generation to `status` with `progress`, only from an unfinished state.
    pub async fn set_progress(&self, id: Uuid, status: &str, progress: i64) -> ApiResult<bool> {
        let updated = sqlx::query(
            "UPDATE generations SET status = $1, progress = $2, updated_at = $3 \
             WHERE id = $4 AND status IN ('pending', 'processing')",
        )
        .bind(status)
        .bind(progress)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Record the output and complete the generation, atomically.
    pub async fn complete_generation(
        &self,
        id: Uuid,
        owner: Uuid,
        storage_key: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> ApiResult<bool> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE generations SET status = 'completed', progress = 100, updated_at = $1, completed_at = $1 \
             WHERE id = $2 AND status IN ('pending', 'processing')",
        )
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO media_files (id, owner_id, generation_id, storage_key, content_type, size_bytes, sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(owner.to_string())
        .bind(id.to_string())
        .bind(storage_key)
        .bind(content_type)
        .bind(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
        .bind(hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes)))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Fail an unfinished generation and refund its credits, once: the status change and the
    /// refund commit together, and a finished generation is never refunded.
    pub async fn fail_generation(&self, id: Uuid, error: &str) -> ApiResult<bool> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE generations SET status = 'failed', error = $1, updated_at = $2 \
             WHERE id = $3 AND status IN ('pending', 'processing')",
        )
        .bind(error)
        .bind(now)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        let row = sqlx::query("SELECT owner_id, credits_charged FROM generations WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let owner = uuid_col(&row, "owner_id")?;
        let charged: i64 = row.try_get("credits_charged")?;
        if charged > 0 {
            sqlx::query("UPDATE users SET credits = credits + $1, updated_at = $2 WHERE id = $3")
                .bind(charged)
                .bind(now)
                .bind(owner.to_string())
                .execute(&mut *tx)
                .await?;
            let reference = format!("generation:{id}");
            record_ledger(&mut tx, owner, "refund", charged, &reference, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Generations left unfinished by a previous process (to fail and refund on start).
    pub async fn unfinished_generations(&self) -> ApiResult<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id FROM generations WHERE status IN ('pending', 'processing') ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| uuid_col(r, "id")).collect()
    }

    /// Mark or unmark a favorite.
    pub async fn set_favorite(&self, id: Uuid, favorite: bool) -> ApiResult<()> {
        sqlx::query("UPDATE generations SET favorite = $1, updated_at = $2 WHERE id = $3")
            .bind(favorite)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Move a generation to another project.
    pub async fn move_generation(&self, id: Uuid, project: Uuid) -> ApiResult<()> {
        sqlx::query("UPDATE generations SET project_id = $1, updated_at = $2 WHERE id = $3")
            .bind(project.to_string())
            .bind(now_ms())
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Delete a generation; returns the storage keys of its media to remove.
    pub async fn delete_generation(&self, id: Uuid) -> ApiResult<Vec<String>> {
        let mut tx = self.pool().begin().await?;
        // Write first: SQLite takes the write lock here instead of failing an upgrade later.
        sqlx::query("UPDATE generations SET updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let keys = sqlx::query("SELECT storage_key FROM media_files WHERE generation_id = $1")
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("storage_key"))
            .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("DELETE FROM generations WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(keys)
    }

    /// A media file by storage key.
    pub async fn media_by_key(&self, key: &str) -> ApiResult<Option<MediaRow>> {
        let row =
            sqlx::query("SELECT content_type, size_bytes FROM media_files WHERE storage_key = $1")
                .bind(key)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| {
            Ok(MediaRow {
                content_type: r.try_get("content_type")?,
                size_bytes: r.try_get("size_bytes")?,
            })
        })
        .transpose()
    }

    /// Credit balance.
    pub async fn balance(&self, user: Uuid) -> ApiResult<i64> {
        Ok(self.user(user).await?.map_or(0, |u| u.credits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(params(1, 3), "$1, $2, $3");
        assert_eq!(params(4, 1), "$4");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(ts(0), "1970-01-01T00:00:00.000Z");
    }
}
