//! Chat sessions and their messages.

use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::{Repo, ts, uuid_col};
use crate::auth::now_ms;
use crate::error::{ApiError, ApiResult};

/// A chat session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Title.
    pub title: String,
    /// Model answering.
    pub model: String,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Last activity, RFC 3339.
    pub updated_at: String,
}

/// A message.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    /// Id.
    pub id: Uuid,
    /// `user | assistant | system`.
    pub role: String,
    /// Text.
    pub content: String,
    /// When, RFC 3339.
    pub created_at: String,
}

fn session(row: &sqlx::any::AnyRow) -> ApiResult<SessionRow> {
    Ok(SessionRow {
        id: uuid_col(row, "id")?,
        owner_id: uuid_col(row, "owner_id")?,
        title: row.try_get("title")?,
        model: row.try_get("model")?,
        created_at: ts(row.try_get("created_at")?),
        updated_at: ts(row.try_get("updated_at")?),
    })
}

impl Repo {
    /// Create a session.
    pub async fn create_session(
        &self,
        owner: Uuid,
        title: &str,
        model: &str,
    ) -> ApiResult<SessionRow> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO chat_sessions (id, owner_id, title, model, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(title)
        .bind(model)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.session(id)
            .await?
            .ok_or_else(|| ApiError::Internal("session vanished after insert".into()))
    }

    /// A session.
    pub async fn session(&self, id: Uuid) -> ApiResult<Option<SessionRow>> {
        let row = sqlx::query(
            "SELECT id, owner_id, title, model, created_at, updated_at FROM chat_sessions WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(session).transpose()
    }

    /// A user's sessions (candidates), most recent first.
    pub async fn sessions_of(&self, owner: Uuid) -> ApiResult<Vec<SessionRow>> {
        let rows = sqlx::query(
            "SELECT id, owner_id, title, model, created_at, updated_at FROM chat_sessions \
             WHERE owner_id = $1 ORDER BY updated_at DESC, id DESC LIMIT 200",
        )
        .bind(owner.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(session).collect()
    }

    /// Delete a session and its messages.
    pub async fn delete_session(&self, id: Uuid) -> ApiResult<()> {
        sqlx::query("DELETE FROM chat_sessions WHERE id = $1")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The last `limit` messages of a session, oldest first.
    pub async fn messages(&self, session: Uuid, limit: i64) -> ApiResult<Vec<MessageRow>> {
        let rows = sqlx::query(
            "SELECT id, role, content, created_at FROM chat_messages WHERE session_id = $1 \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(session.to_string())
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut messages = rows
            .iter()
            .map(|r| {
                Ok(MessageRow {
                    id: uuid_col(r, "id")?,
                    role: r.try_get("role")?,
                    content: r.try_get("content")?,
                    created_at: ts(r.try_get("created_at")?),
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        messages.reverse();
        Ok(messages)
    }

    /// Append a message and touch the session.
    pub async fn add_message(
        &self,
        session: Uuid,
        role: &str,
        content: &str,
    ) -> ApiResult<MessageRow> {
        let id = Uuid::now_v7();
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE chat_sessions SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(session.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO chat_messages (id, session_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(session.to_string())
        .bind(role)
        .bind(content)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(MessageRow {
            id,
            role: role.to_owned(),
            content: content.to_owned(),
            created_at: ts(now),
        })
    }

    /// Names of a user's own projects, most recent first (the assistant's context; the caller
    /// filters them through the PDP).
    pub async fn recent_project_ids(&self, owner: Uuid, limit: i64) -> ApiResult<Vec<Uuid>> {
        let rows =
            sqlx::query("SELECT id FROM projects WHERE owner_id = $1 ORDER BY id DESC LIMIT $2")
                .bind(owner.to_string())
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(|r| uuid_col(r, "id")).collect()
    }
}
