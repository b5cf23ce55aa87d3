//! `Engine::mint_media_urls`: check `generation:view_media` (inline) or `generation:download`
//! (attachment) for the generation, then sign one URL per media file of it (DESIGN §6.3). For an
//! upload not attached to a generation (`media_id`), check `media:view` / `media:download` on the
//! media file and sign that one file.

use std::time::Duration;

use sqlx::Row;

use super::Engine;
use crate::audit::{AuditRecord, RecordKind, Subject, truncate_ip};
use crate::consistency::Consistency;
use crate::db::db_error;
use crate::decision::{CallerInfo, CheckRequest, Decision, EntityInput};
use crate::error::Result;
use crate::ids::{EntityKind, parse_uuid};
use crate::media_url::{Disposition, SignedUrl};

/// A request for signed URLs of a generation's media.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// Policy store; `velro` when `None`.
    pub store: Option<String>,
    /// Who will fetch the media.
    pub principal: EntityInput,
    /// The generation (ignored when `media_id` is set).
    pub generation_id: String,
    /// An upload not attached to a generation, instead of a generation.
    pub media_id: Option<String>,
    /// Inline (view) or attachment (download).
    pub disposition: Disposition,
    /// URL lifetime; the signer's default when `None`.
    pub ttl: Option<Duration>,
    /// Freshness of the permission check.
    pub consistency: Consistency,
    /// Correlation and client facts.
    pub caller: CallerInfo,
}

/// One signed URL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MintedMedia {
    /// The media file's id.
    pub media_id: String,
    /// Its content type.
    pub content_type: String,
    /// The URL and its expiry.
    pub url: SignedUrl,
}

/// The permission decision and, when allowed, the URLs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MintOutcome {
    /// The decision on `generation:view_media` / `generation:download`.
    pub decision: Decision,
    /// One URL per media file (empty when denied).
    pub urls: Vec<MintedMedia>,
}

impl Engine {
    /// Check and, if allowed, mint signed URLs for every media file of a generation.
    pub async fn mint_media_urls(&self, request: &MintRequest) -> Result<MintOutcome> {
        let (kind, target, action) = match &request.media_id {
            Some(media) => (
                EntityKind::MediaFile,
                parse_uuid(media)?,
                match request.disposition {
                    Disposition::Inline => "media:view",
                    Disposition::Attachment => "media:download",
                },
            ),
            None => (
                EntityKind::Generation,
                parse_uuid(&request.generation_id)?,
                match request.disposition {
                    Disposition::Inline => "generation:view_media",
                    Disposition::Attachment => "generation:download",
                },
            ),
        };
        let mut check = CheckRequest::new(
            request.principal.clone(),
            action,
            EntityInput::new(kind.type_name(), target.hyphenated().to_string()),
        );
        check.store = request.store.clone();
        check.consistency = request.consistency.clone();
        check.caller = request.caller.clone();
        let decision = self.check(check).await?;
        if !decision.allowed {
            return Ok(MintOutcome {
                decision,
                urls: Vec::new(),
            });
        }
        let sql = match kind {
            // Uploads only: a generation's media are reached through the generation.
            EntityKind::MediaFile => {
                "SELECT id, storage_key, content_type FROM media_files \
                 WHERE id = $1 AND generation_id IS NULL"
            }
            _ => {
                "SELECT id, storage_key, content_type FROM media_files \
                 WHERE generation_id = $1 ORDER BY created_at, id"
            }
        };
        let rows = sqlx::query(sql)
            .bind(target.hyphenated().to_string())
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(|e| super::unavailable(db_error(e)))?;
        let mut urls = Vec::with_capacity(rows.len());
        for row in &rows {
            let media_id: String = row.try_get(0).map_err(db_error)?;
            let key: String = row.try_get(1).map_err(db_error)?;
            let content_type: String = row.try_get(2).map_err(db_error)?;
            let url = self.inner.signer.mint(
                &key,
                &request.principal.id,
                request.disposition,
                request.ttl,
            )?;
            urls.push(MintedMedia {
                media_id,
                content_type,
                url,
            });
        }
        let mut record = AuditRecord::new(RecordKind::MediaUrl, self.inner.clock.now_ms());
        record.principal = Some(Subject::Text(format!(
            "{}:{}",
            request.principal.type_name, request.principal.id
        )));
        record.action = Some(std::sync::Arc::from(action));
        record.resource = Some(Subject::Entity(crate::ids::EntityRef::new(kind, target)));
        record.decision = Some(std::borrow::Cow::Borrowed("allow"));
        record.detail = Some(format!(
            "{} {} URL(s), key {}",
            urls.len(),
            request.disposition.as_str(),
            urls.first().map_or("-", |u| u.url.kid.as_str())
        ));
        record.request_id = request.caller.request_id.clone();
        record.client_ip = request.caller.client_ip.map(truncate_ip);
        self.inner.audit.record(record).await?;
        Ok(MintOutcome { decision, urls })
    }
}
