//! `GET /media/{key}`: streams a stored file only after the PDP verified the URL's signature,
//! expiry, key and path binding (DESIGN §6.3). Tampered, expired or retired-key URLs are 403.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

pub(crate) async fn serve(State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    if path.len() > 1024 || query.len() > 4096 {
        return Err(ApiError::Forbidden);
    }
    let Some(verified) = state.pdp.verify(&path, &query).await? else {
        return Err(ApiError::Forbidden);
    };
    let Some(row) = state.repo.media_by_key(&verified.key).await? else {
        return Err(ApiError::NotFound("media"));
    };
    let (size, chunks) = match state.media.open(&verified.key).await {
        Ok(Some(object)) => object,
        Ok(None) => return Err(ApiError::NotFound("media")),
        Err(e) => return Err(ApiError::Internal(format!("opening media: {e}"))),
    };
    if i64::try_from(size).ok() != Some(row.size_bytes) {
        return Err(ApiError::Internal(
            "media file size does not match its record".into(),
        ));
    }
    let name = verified.key.rsplit('/').next().unwrap_or("media");
    let disposition = if verified.attachment {
        format!("attachment; filename=\"{name}\"")
    } else {
        "inline".to_owned()
    };
    let mut response = (StatusCode::OK, Body::from_stream(chunks)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&row.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
