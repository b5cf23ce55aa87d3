//! `/api/v1/teams`: create, list, get, update, delete, members (add, change role, remove, leave)
//! and invitations. Every rule of DESIGN §4 (who may invite, who may touch an admin, the last
//! owner) is the PDP's: handlers pass the facts (current and new role) as context and obey.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Page, Written, written};
use crate::app::AppState;
use crate::auth::{User, new_opaque_token, normalize_email, now_ms, sha256_hex};
use crate::authz::{Ask, Freshness, Kind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, parse_id, text};

const ROLES: [&str; 5] = ["viewer", "contributor", "editor", "admin", "owner"];

fn role(field: &'static str, value: &str) -> ApiResult<String> {
    ROLES
        .iter()
        .find(|r| **r == value)
        .map(|r| (*r).to_owned())
        .ok_or_else(|| {
            ApiError::validation(
                field,
                format!("{field} must be one of {}", ROLES.join(", ")),
            )
        })
}

fn role_ref(role: &str) -> Value {
    json!({ "type": "Velro::TeamRole", "id": role })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTeam {
    name: String,
    #[serde(default)]
    description: String,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<NewTeam>,
) -> ApiResult<Written<Value>> {
    let name = text("name", &body.name, 100, true)?;
    let description = text("description", &body.description, 1000, false)?;
    let ask = Ask::new("user:create_team", Kind::User, user.id);
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    let team = state.repo.create_team(user.id, &name, &description).await?;
    let fresh = written(&state, &fresh).await?;
    let mut body = json!(team);
    body["role"] = json!("owner");
    Ok(Written::created(fresh, body))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
) -> ApiResult<Json<Page<Value>>> {
    let candidates = state.repo.teams_of(user.id).await?;
    let items = state
        .pdp
        .filter(
            user.principal(),
            "team:view",
            Kind::Team,
            candidates,
            |(t, _)| t.id,
            &fresh,
        )
        .await?
        .into_iter()
        .map(|(team, role)| {
            let mut v = json!(team);
            v["role"] = json!(role);
            v
        })
        .collect();
    Ok(Json(Page::complete(items)))
}

async fn team_body(state: &AppState, id: uuid::Uuid, user: &User) -> ApiResult<Value> {
    let team = state
        .repo
        .team(id)
        .await?
        .ok_or(ApiError::NotFound("team"))?;
    let mut body = json!(team);
    body["role"] = json!(state.repo.member_role(id, user.id).await?);
    Ok(body)
}

pub(crate) async fn get(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id("team_id", &id)?;
    state
        .pdp
        .require(
            user.principal(),
            "team:view",
            Ask::new("team:view", Kind::Team, id),
            &fresh,
        )
        .await?;
    Ok(Json(team_body(&state, id, &user).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TeamUpdate {
    name: Option<String>,
    description: Option<String>,
}

pub(crate) async fn update(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
    Json(body): Json<TeamUpdate>,
) -> ApiResult<Written<Value>> {
    let id = parse_id("team_id", &id)?;
    let name = body
        .name
        .as_deref()
        .map(|n| text("name", n, 100, true))
        .transpose()?;
    let description = body
        .description
        .as_deref()
        .map(|d| text("description", d, 1000, false))
        .transpose()?;
    state
        .pdp
        .require(
            user.principal(),
            "team:view",
            Ask::new("team:update", Kind::Team, id),
            &fresh,
        )
        .await?;
    state
        .repo
        .update_team(id, name.as_deref(), description.as_deref())
        .await?;
    let fresh = written(&state, &fresh).await?;
    Ok(Written::ok(fresh, team_body(&state, id, &user).await?))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<()>> {
    let id = parse_id("team_id", &id)?;
    state
        .pdp
        .require(
            user.principal(),
            "team:view",
            Ask::new("team:delete", Kind::Team, id),
            &fresh,
        )
        .await?;
    state.repo.delete_team(id).await?;
    Ok(Written::no_content(written(&state, &fresh).await?))
}

pub(crate) async fn members(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<Value>>> {
    let id = parse_id("team_id", &id)?;
    state
        .pdp
        .require(
            user.principal(),
            "team:view",
            Ask::new("team:view", Kind::Team, id),
            &fresh,
        )
        .await?;
    let members = state.repo.members(id).await?;
    Ok(Json(Page::complete(
        members.iter().map(|m| json!(m)).collect(),
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddMember {
    email: String,
    role: String,
}

/// Add an existing user by email (invitations are the flow for unknown emails).
pub(crate) async fn add_member(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
    Json(body): Json<AddMember>,
) -> ApiResult<Written<Value>> {
    let id = parse_id("team_id", &id)?;
    let role = role("role", &body.role)?;
    let email = normalize_email(&body.email)?;
    let ask = Ask::new("team:invite", Kind::Team, id)
        .with_context(json!({ "new_role": role_ref(&role) }));
    state
        .pdp
        .require(user.principal(), "team:view", ask, &fresh)
        .await?;
    let member = state
        .repo
        .user_by_email(&email)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    state.repo.add_member(id, member.id, &role).await?;
    let fresh = written(&state, &fresh).await?;
    Ok(Written::created(
        fresh,
        json!({ "team_id": id, "user_id": member.id, "role": role }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleChange {
    role: String,
}

/// The current role of `member` in a team the caller may view (404 for either otherwise): the
/// fact the role-change and removal decisions need.
async fn visible_member_role(
    state: &AppState,
    user: &User,
    team: uuid::Uuid,
    member: uuid::Uuid,
    fresh: &Freshness,
) -> ApiResult<String> {
    let ask = Ask::new("team:view", Kind::Team, team);
    state
        .pdp
        .require(user.principal(), "team:view", ask, fresh)
        .await?;
    state
        .repo
        .member_role(team, member)
        .await?
        .ok_or(ApiError::NotFound("member"))
}

/// A conditional membership write found the role it was decided on gone.
fn membership_changed() -> ApiError {
    ApiError::conflict(
        "MEMBERSHIP_CHANGED",
        "the membership changed meanwhile; retry",
    )
}

pub(crate) async fn set_role(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path((id, member)): Path<(String, String)>,
    Json(body): Json<RoleChange>,
) -> ApiResult<Written<Value>> {
    let id = parse_id("team_id", &id)?;
    let member = parse_id("user_id", &member)?;
    let new_role = role("role", &body.role)?;
    let current = visible_member_role(&state, &user, id, member, &fresh).await?;
    let ask = Ask::new("team:set_role", Kind::Team, id).with_context(json!({
        "target_role": role_ref(&current),
        "new_role": role_ref(&new_role),
    }));
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    if !state.repo.set_role(id, member, &current, &new_role).await? {
        return Err(membership_changed());
    }
    let fresh = written(&state, &fresh).await?;
    Ok(Written::ok(
        fresh,
        json!({ "team_id": id, "user_id": member, "role": new_role }),
    ))
}

/// Remove a member; removing oneself is leaving (`team:leave`).
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<Written<()>> {
    let id = parse_id("team_id", &id)?;
    let member = parse_id("user_id", &member)?;
    if member == user.id {
        return leave_team(&state, &user, id, &fresh).await;
    }
    let current = visible_member_role(&state, &user, id, member, &fresh).await?;
    let ask = Ask::new("team:remove_member", Kind::Team, id)
        .with_context(json!({ "target_role": role_ref(&current) }));
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    if !state.repo.remove_member(id, member, &current).await? {
        return Err(membership_changed());
    }
    Ok(Written::no_content(written(&state, &fresh).await?))
}

async fn leave_team(
    state: &AppState,
    user: &User,
    id: uuid::Uuid,
    fresh: &Freshness,
) -> ApiResult<Written<()>> {
    state
        .pdp
        .require(
            user.principal(),
            "team:view",
            Ask::new("team:leave", Kind::Team, id),
            fresh,
        )
        .await?;
    let current = state
        .repo
        .member_role(id, user.id)
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    if !state.repo.remove_member(id, user.id, &current).await? {
        return Err(membership_changed());
    }
    Ok(Written::no_content(written(state, fresh).await?))
}

pub(crate) async fn leave(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<()>> {
    let id = parse_id("team_id", &id)?;
    leave_team(&state, &user, id, &fresh).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewInvitation {
    email: String,
    role: String,
}

/// Invite by email. The token is returned to the inviter to pass on (there is no mailer); only
/// its hash is stored, and it expires.
pub(crate) async fn invite(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
    Json(body): Json<NewInvitation>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = parse_id("team_id", &id)?;
    let role = role("role", &body.role)?;
    let email = normalize_email(&body.email)?;
    let ask = Ask::new("team:invite", Kind::Team, id)
        .with_context(json!({ "new_role": role_ref(&role) }));
    state
        .pdp
        .require(user.principal(), "team:view", ask, &fresh)
        .await?;
    let (token, hash) = new_opaque_token()?;
    let expires_at =
        now_ms() + i64::try_from(state.settings.invitation_ttl.as_millis()).unwrap_or(0);
    let invitation = state
        .repo
        .create_invitation(id, &email, &role, &hash, user.id, expires_at)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": invitation,
            "team_id": id,
            "email": email,
            "role": role,
            "token": token,
            "expires_at": chrono::DateTime::from_timestamp_millis(expires_at).map(|t| t.to_rfc3339()),
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Accept {
    token: String,
}

/// Accept an invitation addressed to the caller's email.
pub(crate) async fn accept(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<Accept>,
) -> ApiResult<Written<Value>> {
    let not_found = ApiError::NotFound("invitation");
    if body.token.is_empty() || body.token.len() > 128 {
        return Err(not_found);
    }
    let Some(invitation) = state.repo.invitation(&sha256_hex(&body.token)).await? else {
        return Err(not_found);
    };
    let me = state
        .repo
        .user(user.id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if invitation.email != me.email {
        return Err(not_found);
    }
    if invitation.accepted || invitation.expires_at <= now_ms() {
        return Err(ApiError::conflict(
            "INVITATION_USED",
            "the invitation was already used or has expired",
        ));
    }
    // Joining is a change to one's own account: suspended users may not.
    let ask = Ask::new("user:update", Kind::User, user.id);
    if !state.pdp.allows(user.principal(), ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    state.repo.accept_invitation(&invitation, user.id).await?;
    let fresh = written(&state, &fresh).await?;
    Ok(Written::ok(
        fresh,
        json!({ "team_id": invitation.team_id, "user_id": user.id, "role": invitation.role }),
    ))
}
