//! `/api/v1/users/me`: profile and settings. Decided by the PDP (`user:view`, `user:update` on
//! oneself), so a suspended account is refused here like everywhere else.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::User;
use crate::authz::{Ask, Freshness, Kind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, text};

async fn allow(
    state: &AppState,
    user: &User,
    action: &'static str,
    fresh: &Freshness,
) -> ApiResult<()> {
    let ask = Ask::new(action, Kind::User, user.id);
    match state.pdp.allows(user.principal(), ask, fresh).await? {
        true => Ok(()),
        false => Err(ApiError::Forbidden),
    }
}

async fn profile_of(state: &AppState, user: &User) -> ApiResult<Value> {
    let row = state
        .repo
        .user(user.id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(json!({
        "id": row.id,
        "email": row.email,
        "full_name": row.full_name,
        "credits": row.credits,
        "settings": row.settings,
        "created_at": row.created_at,
    }))
}

pub(crate) async fn profile(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<Json<Value>> {
    allow(&state, &user, "user:view", &fresh).await?;
    Ok(Json(profile_of(&state, &user).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileUpdate {
    full_name: Option<String>,
}

pub(crate) async fn update_profile(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<ProfileUpdate>,
) -> ApiResult<Json<Value>> {
    allow(&state, &user, "user:update", &fresh).await?;
    let name = body
        .full_name
        .as_deref()
        .map(|n| text("full_name", n, 100, true))
        .transpose()?;
    state
        .repo
        .update_user(user.id, name.as_deref(), None)
        .await?;
    Ok(Json(profile_of(&state, &user).await?))
}

pub(crate) async fn settings(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<Json<Value>> {
    allow(&state, &user, "user:view", &fresh).await?;
    Ok(Json(profile_of(&state, &user).await?["settings"].clone()))
}

/// Replace the settings document: a JSON object of at most 16 KiB, at most 4 levels deep.
pub(crate) async fn put_settings(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    allow(&state, &user, "user:update", &fresh).await?;
    fn depth(v: &Value) -> usize {
        match v {
            Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if !body.is_object() || body.to_string().len() > 16 * 1024 || depth(&body) > 4 {
        return Err(ApiError::validation(
            "settings",
            "settings must be a JSON object of at most 16 KiB and 4 levels",
        ));
    }
    state.repo.update_user(user.id, None, Some(&body)).await?;
    Ok(Json(body))
}
