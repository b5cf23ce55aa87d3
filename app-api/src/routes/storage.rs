//! `/api/v1/storage`: uploads (multipart, size-limited while streaming, type decided by magic
//! bytes, SHA-256 recorded, server-generated keys), list, get, signed download URLs (minted by the
//! PDP: `media:view` / `media:download`), delete, usage and integrity checks. Uploads belong to
//! their owner alone, as the policies say.

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Page, Written, limit, written};
use crate::app::AppState;
use crate::auth::User;
use crate::authz::{Ask, Freshness, Kind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, parse_id, parse_opt_id};
use crate::media_types::{SNIFF_BYTES, sniff};
use crate::repo::uploads::UploadRow;

/// Room for multipart framing beyond the file itself.
pub const MULTIPART_OVERHEAD: usize = 64 * 1024;

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::validation(
            "file",
            format!("malformed multipart body: {}", e.body_text()),
        )
    }
}

/// Stream the `file` field to a temporary file, hashing and counting; refuse as soon as it is too
/// large or its first bytes are not an accepted type. Returns (temp path, type, extension, size,
/// sha256).
async fn receive(
    state: &AppState,
    multipart: &mut Multipart,
) -> ApiResult<(std::path::PathBuf, &'static str, &'static str, u64, String)> {
    let max = state.settings.max_file_bytes;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") {
            continue;
        }
        let (temp, mut file) = state
            .media
            .temp_file()
            .await
            .map_err(|e| ApiError::Internal(format!("temp file: {e}")))?;
        let result = async {
            let mut context = ring::digest::Context::new(&ring::digest::SHA256);
            let mut head = Vec::with_capacity(SNIFF_BYTES);
            let mut kind = None;
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                size += chunk.len() as u64;
                if size > max {
                    return Err(ApiError::PayloadTooLarge);
                }
                if kind.is_none() {
                    head.extend_from_slice(
                        &chunk[..chunk.len().min(SNIFF_BYTES - head.len().min(SNIFF_BYTES))],
                    );
                    if head.len() >= SNIFF_BYTES {
                        kind = Some(sniff(&head).ok_or(ApiError::UnsupportedFileType)?);
                    }
                }
                context.update(&chunk);
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                    .await
                    .map_err(|e| ApiError::Internal(format!("writing upload: {e}")))?;
            }
            let (content_type, extension) = match kind {
                Some(kind) => kind,
                None => sniff(&head).ok_or(ApiError::UnsupportedFileType)?,
            };
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(|e| ApiError::Internal(format!("writing upload: {e}")))?;
            Ok((
                content_type,
                extension,
                size,
                hex::encode(context.finish().as_ref()),
            ))
        }
        .await;
        drop(file);
        return match result {
            Ok((content_type, extension, size, sha)) => {
                Ok((temp, content_type, extension, size, sha))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        };
    }
    Err(ApiError::validation(
        "file",
        "the multipart body has no `file` field",
    ))
}

pub(crate) async fn upload(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> ApiResult<Written<UploadRow>> {
    // Refuse a declared oversize body before reading any of it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.settings.max_file_bytes + MULTIPART_OVERHEAD as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let ask = Ask::new("user:upload", Kind::User, user.id);
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    let (temp, content_type, extension, size, sha) = receive(&state, &mut multipart).await?;
    let id = Uuid::now_v7();
    // The key is ours: no part of the client's file name reaches the file system.
    let key = format!("uploads/{}/{id}.{extension}", user.id);
    if let Err(e) = state.media.commit(&temp, &key, content_type).await {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(ApiError::Internal(format!("storing upload: {e}")));
    }
    let size = i64::try_from(size).map_err(|_| ApiError::PayloadTooLarge)?;
    let row = match state
        .repo
        .insert_upload(id, user.id, &key, content_type, size, &sha)
        .await
    {
        Ok(row) => row,
        Err(e) => {
            state.media.remove(&[key]).await;
            return Err(e);
        }
    };
    let fresh = written(&state, &fresh).await?;
    Ok(Written::created(fresh, row))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Page<UploadRow>>> {
    let limit = limit(query.limit, 50, 200)?;
    let cursor = parse_opt_id("cursor", query.cursor.as_deref())?;
    let candidates = state
        .repo
        .uploads_of(user.id, cursor, i64::from(limit))
        .await?;
    let next_cursor = (candidates.len() == limit as usize)
        .then(|| candidates.last().map(|u| u.id.to_string()))
        .flatten();
    let items = state
        .pdp
        .filter(
            user.principal(),
            "media:view",
            Kind::MediaFile,
            candidates,
            |u| u.id,
            &fresh,
        )
        .await?;
    Ok(Json(Page { items, next_cursor }))
}

async fn owned(
    state: &AppState,
    user: &User,
    fresh: &Freshness,
    id: &str,
    action: &'static str,
) -> ApiResult<UploadRow> {
    let id = parse_id("upload_id", id)?;
    let ask = Ask::new(action, Kind::MediaFile, id);
    state
        .pdp
        .require(user.principal(), "media:view", ask, fresh)
        .await?;
    state
        .repo
        .upload(id)
        .await?
        .ok_or(ApiError::NotFound("upload"))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<UploadRow>> {
    Ok(Json(owned(&state, &user, &fresh, &id, "media:view").await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UrlQuery {
    disposition: Option<String>,
}

/// A signed URL for the upload, minted by the PDP.
pub(crate) async fn url(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
    Query(query): Query<UrlQuery>,
) -> ApiResult<Json<Value>> {
    let attachment = match query.disposition.as_deref() {
        None | Some("attachment") => true,
        Some("inline") => false,
        Some(_) => {
            return Err(ApiError::validation(
                "disposition",
                "disposition must be inline or attachment",
            ));
        }
    };
    let upload = owned(&state, &user, &fresh, &id, "media:view").await?;
    match state
        .pdp
        .mint_upload(user.principal(), upload.id, attachment, &fresh)
        .await?
    {
        Some(urls) => Ok(Json(json!({ "items": urls }))),
        None => Err(ApiError::Forbidden),
    }
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<()>> {
    let upload = owned(&state, &user, &fresh, &id, "media:delete").await?;
    state.repo.delete_upload(upload.id).await?;
    state.media.remove(&[upload.storage_key]).await;
    Ok(Written::no_content(written(&state, &fresh).await?))
}

/// Re-hash the stored file and compare with the recorded SHA-256 and size.
pub(crate) async fn verify(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let upload = owned(&state, &user, &fresh, &id, "media:view").await?;
    let (ok, detail) = match state.media.digest(&upload.storage_key).await {
        Ok((sha, size)) => {
            let intact =
                sha == upload.sha256 && i64::try_from(size).ok() == Some(upload.size_bytes);
            (
                intact,
                if intact {
                    "intact"
                } else {
                    "content differs from the recorded SHA-256"
                },
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (false, "the stored file is missing"),
        Err(e) => return Err(ApiError::Internal(format!("reading upload: {e}"))),
    };
    Ok(Json(
        json!({ "id": upload.id, "intact": ok, "detail": detail, "sha256": upload.sha256 }),
    ))
}

/// Files and bytes the caller stores, against the per-file limit.
pub(crate) async fn usage(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<Json<Value>> {
    let ask = Ask::new("user:view", Kind::User, user.id);
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    let (files, bytes) = state.repo.usage(user.id).await?;
    Ok(Json(
        json!({ "files": files, "bytes": bytes, "max_file_bytes": state.settings.max_file_bytes }),
    ))
}
