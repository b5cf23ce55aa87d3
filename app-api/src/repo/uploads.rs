//! Uploads: media files not attached to a generation, their owners' usage, and the key inventory
//! the orphan sweep compares the storage against.

use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::{Repo, ts, uuid_col};
use crate::auth::now_ms;
use crate::error::ApiResult;

/// An uploaded file.
#[derive(Debug, Clone, Serialize)]
pub struct UploadRow {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Server-generated storage key.
    #[serde(skip)]
    pub storage_key: String,
    /// Decided from the file's bytes.
    pub content_type: String,
    /// Size.
    pub size_bytes: i64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Uploaded, RFC 3339.
    pub created_at: String,
}

const COLUMNS: &str = "id, owner_id, storage_key, content_type, size_bytes, sha256, created_at";

fn upload(row: &sqlx::any::AnyRow) -> ApiResult<UploadRow> {
    Ok(UploadRow {
        id: uuid_col(row, "id")?,
        owner_id: uuid_col(row, "owner_id")?,
        storage_key: row.try_get("storage_key")?,
        content_type: row.try_get("content_type")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        created_at: ts(row.try_get("created_at")?),
    })
}

impl Repo {
    /// Record a stored upload.
    pub async fn insert_upload(
        &self,
        id: Uuid,
        owner: Uuid,
        key: &str,
        content_type: &str,
        size: i64,
        sha256: &str,
    ) -> ApiResult<UploadRow> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO media_files (id, owner_id, generation_id, storage_key, content_type, size_bytes, sha256, created_at) \
             VALUES ($1, $2, NULL, $3, $4, $5, $6, $7)",
        )
        .bind(id.to_string())
        .bind(owner.to_string())
        .bind(key)
        .bind(content_type)
        .bind(size)
        .bind(sha256)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(UploadRow {
            id,
            owner_id: owner,
            storage_key: key.to_owned(),
            content_type: content_type.to_owned(),
            size_bytes: size,
            sha256: sha256.to_owned(),
            created_at: ts(now),
        })
    }

    /// An upload (not a generation's output).
    pub async fn upload(&self, id: Uuid) -> ApiResult<Option<UploadRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM media_files WHERE id = $1 AND generation_id IS NULL"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(upload).transpose()
    }

    /// A user's uploads after `cursor`, oldest first (candidates).
    pub async fn uploads_of(
        &self,
        owner: Uuid,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> ApiResult<Vec<UploadRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM media_files WHERE owner_id = $1 AND generation_id IS NULL AND id > $2 \
             ORDER BY id LIMIT $3"
        )))
        .bind(owner.to_string())
        .bind(cursor.map_or_else(String::new, |c| c.to_string()))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(upload).collect()
    }

    /// Files and bytes a user stores (uploads and generation outputs).
    pub async fn usage(&self, owner: Uuid) -> ApiResult<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS files, COALESCE(SUM(size_bytes), 0) AS bytes FROM media_files WHERE owner_id = $1",
        )
        .bind(owner.to_string())
        .fetch_one(self.pool())
        .await?;
        Ok((row.try_get("files")?, row.try_get("bytes")?))
    }

    /// Delete an upload's record.
    pub async fn delete_upload(&self, id: Uuid) -> ApiResult<()> {
        sqlx::query("DELETE FROM media_files WHERE id = $1 AND generation_id IS NULL")
            .bind(id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Whether any media record names `key`.
    pub async fn key_known(&self, key: &str) -> ApiResult<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM media_files WHERE storage_key = $1")
                .bind(key)
                .fetch_optional(self.pool())
                .await?
                .is_some(),
        )
    }
}
