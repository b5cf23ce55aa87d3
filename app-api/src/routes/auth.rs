//! `/api/v1/auth`: register, login, refresh (rotation; reuse revokes the family), logout, me.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{
    self, DUMMY_HASH, User, check_password_policy, new_opaque_token, normalize_email, now_ms,
    sha256_hex,
};
use crate::authz::{Ask, Freshness, Kind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, text};
use crate::repo::UserRow;
use crate::request_id;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Register {
    email: String,
    password: String,
    full_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Refresh {
    refresh_token: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Session {
    user: PublicUser,
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
}

#[derive(Debug, Serialize)]
struct PublicUser {
    id: Uuid,
    email: String,
    full_name: String,
}

impl From<&UserRow> for PublicUser {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            full_name: u.full_name.clone(),
        }
    }
}

/// Issue an access token and a refresh token of `family` (a new family at login).
async fn session(state: &AppState, user: &UserRow, family: Uuid) -> ApiResult<Session> {
    let (access_token, _) = state.tokens.issue(user.id)?;
    let (refresh_token, hash) = new_opaque_token()?;
    let expires = now_ms() + i64::try_from(state.tokens.refresh_ttl.as_millis()).unwrap_or(0);
    state
        .repo
        .insert_refresh(user.id, family, &hash, expires)
        .await?;
    Ok(Session {
        user: user.into(),
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: state.tokens.access_ttl.as_secs(),
    })
}

pub(crate) async fn register(
    State(state): State<AppState>,
    Json(body): Json<Register>,
) -> ApiResult<impl IntoResponse> {
    let email = normalize_email(&body.email)?;
    check_password_policy(&body.password)?;
    let full_name = text("full_name", &body.full_name, 100, true)?;
    let hash = auth::hash_password(body.password).await?;
    let user = state
        .repo
        .create_user(&email, &hash, &full_name, state.settings.signup_credits)
        .await?;
    state.repo.wrote().await?;
    tracing::info!(user = %user.id, "user registered");
    let session = session(&state, &user, Uuid::now_v7()).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

pub(crate) async fn login(
    State(state): State<AppState>,
    Json(body): Json<Login>,
) -> ApiResult<Json<Session>> {
    if body.password.len() > 1024 {
        return Err(ApiError::InvalidCredentials);
    }
    let email = normalize_email(&body.email).map_err(|_| ApiError::InvalidCredentials)?;
    let account = format!("acct:{email}");
    let keys = [account.clone(), format!("ip:{}", request_id::client_ip())];
    state.throttle.check(&keys)?;
    let user = state.repo.user_by_email(&email).await?;
    // Verify against a dummy hash when the account does not exist: same work, same timing.
    let hash = user
        .as_ref()
        .map_or_else(|| DUMMY_HASH.to_owned(), |u| u.password_hash.clone());
    let valid = auth::verify_password(body.password, hash).await?;
    let Some(user) = user.filter(|_| valid) else {
        state.throttle.failed(&keys);
        return Err(ApiError::InvalidCredentials);
    };
    state.throttle.succeeded(&account);
    Ok(Json(session(&state, &user, Uuid::now_v7()).await?))
}

pub(crate) async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<Refresh>,
) -> ApiResult<Json<Session>> {
    let invalid = ApiError::Unauthenticated("invalid refresh token");
    if body.refresh_token.is_empty() || body.refresh_token.len() > 128 {
        return Err(invalid);
    }
    let Some(old) = state
        .repo
        .refresh_by_hash(&sha256_hex(&body.refresh_token))
        .await?
    else {
        return Err(invalid);
    };
    if old.spent {
        // A spent token presented again: someone holds a copy. Revoke the whole family.
        state.repo.revoke_family(old.family_id).await?;
        tracing::warn!(user = %old.user_id, family = %old.family_id, "refresh token reuse; family revoked");
        return Err(ApiError::TokenReused);
    }
    if old.expires_at <= now_ms() {
        return Err(ApiError::Unauthenticated("refresh token expired"));
    }
    let Some(user) = state.repo.user(old.user_id).await? else {
        return Err(invalid);
    };
    let (access_token, _) = state.tokens.issue(user.id)?;
    let (refresh_token, hash) = new_opaque_token()?;
    let expires = now_ms() + i64::try_from(state.tokens.refresh_ttl.as_millis()).unwrap_or(0);
    if !state.repo.rotate_refresh(&old, &hash, expires).await? {
        // Lost a race with another use of the same token: that is reuse too.
        state.repo.revoke_family(old.family_id).await?;
        return Err(ApiError::TokenReused);
    }
    Ok(Json(Session {
        user: (&user).into(),
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: state.tokens.access_ttl.as_secs(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Logout {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Revoke the presented access token and, if given, the refresh token's family.
pub(crate) async fn logout(
    State(state): State<AppState>,
    user: User,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let body: Logout = if body.iter().all(u8::is_ascii_whitespace) {
        Logout {
            refresh_token: None,
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::Validation {
            message: format!("invalid JSON body: {e}"),
            field: None,
        })?
    };
    state
        .repo
        .revoke_jti(&user.claims.jti, user.claims.exp)
        .await?;
    if let Some(token) = body.refresh_token
        && token.len() <= 128
        && let Some(row) = state.repo.refresh_by_hash(&sha256_hex(&token)).await?
        && row.user_id == user.id
    {
        state.repo.revoke_family(row.family_id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn me(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<Json<serde_json::Value>> {
    let ask = Ask::new("user:view", Kind::User, user.id);
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    let row = state
        .repo
        .user(user.id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(json!({
        "id": row.id,
        "email": row.email,
        "full_name": row.full_name,
        "credits": row.credits,
        "created_at": row.created_at,
    })))
}
