//! `/api/v1/projects`: create, list (`LookupResources`), get, update, share (visibility,
//! inheritance, team links), delete, sub-projects, gallery and transferring generations in. What a
//! caller may see or change is the PDP's decision; lists never filter by hand-written SQL rules.

use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Page, Written, limit, written};
use crate::app::AppState;
use crate::auth::{Caller, User};
use crate::authz::{Ask, Freshness, Kind};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, parse_id, parse_opt_id, text};

const VISIBILITIES: [&str; 5] = [
    "private",
    "team_restricted",
    "team_open",
    "public_read",
    "public",
];
const CAPS: [&str; 3] = ["read", "write", "admin"];

fn visibility(value: &str) -> ApiResult<String> {
    VISIBILITIES
        .iter()
        .find(|v| **v == value)
        .map(|v| (*v).to_owned())
        .ok_or_else(|| {
            ApiError::validation(
                "visibility",
                format!("visibility must be one of {}", VISIBILITIES.join(", ")),
            )
        })
}

fn tags(value: &[String]) -> ApiResult<Value> {
    if value.len() > 20 {
        return Err(ApiError::validation("tags", "at most 20 tags"));
    }
    let tags = value
        .iter()
        .map(|t| text("tags", t, 40, true))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(json!(tags))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewProject {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
    visibility: Option<String>,
    team_id: Option<String>,
    parent_id: Option<String>,
    #[serde(default)]
    inherit_access: bool,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Json(body): Json<NewProject>,
) -> ApiResult<Written<Value>> {
    let name = text("name", &body.name, 100, true)?;
    let description = text("description", &body.description, 2000, false)?;
    let tags = tags(&body.tags)?;
    let visibility = visibility(body.visibility.as_deref().unwrap_or("private"))?;
    let team = parse_opt_id("team_id", body.team_id.as_deref())?;
    let parent = parse_opt_id("parent_id", body.parent_id.as_deref())?;
    let me = user.principal();

    let ask = Ask::new("user:create_project", Kind::User, user.id);
    if !state.pdp.allows(me, ask, &fresh).await? {
        return Err(ApiError::Forbidden);
    }
    if let Some(team) = team {
        let ask = Ask::new("team:create_project", Kind::Team, team);
        state.pdp.require(me, "team:view", ask, &fresh).await?;
    }
    if let Some(parent) = parent {
        let ask = Ask::new("project:create_subproject", Kind::Project, parent);
        state.pdp.require(me, "project:view", ask, &fresh).await?;
    }
    let id = state
        .repo
        .create_project(
            user.id,
            &name,
            &description,
            &tags,
            &visibility,
            team,
            parent,
            body.inherit_access,
        )
        .await?;
    let fresh = written(&state, &fresh).await?;
    let project = state
        .repo
        .project(id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    Ok(Written::created(fresh, json!(project)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Projects the caller may view, ascending by id, one page at a time.
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Page<Value>>> {
    let limit = limit(query.limit, 50, 200)?;
    let cursor = parse_opt_id("cursor", query.cursor.as_deref())?;
    let page = state
        .pdp
        .lookup(
            caller,
            "project:view",
            Kind::Project,
            cursor.map(|c| c.to_string()).as_deref(),
            limit,
            &fresh,
        )
        .await?;
    let projects = state.repo.projects(&page.ids).await?;
    Ok(Json(Page {
        items: projects.iter().map(|p| json!(p)).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id("project_id", &id)?;
    let ask = Ask::new("project:view", Kind::Project, id);
    state
        .pdp
        .require(caller, "project:view", ask, &fresh)
        .await?;
    let project = state
        .repo
        .project(id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    Ok(Json(json!(project)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectUpdate {
    name: Option<String>,
    description: Option<String>,
    tags: Option<Vec<String>>,
}

pub(crate) async fn update(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
    Json(body): Json<ProjectUpdate>,
) -> ApiResult<Written<Value>> {
    let id = parse_id("project_id", &id)?;
    let name = body
        .name
        .as_deref()
        .map(|n| text("name", n, 100, true))
        .transpose()?;
    let description = body
        .description
        .as_deref()
        .map(|d| text("description", d, 2000, false))
        .transpose()?;
    let tags = body.tags.as_deref().map(tags).transpose()?;
    let ask = Ask::new("project:update", Kind::Project, id);
    state
        .pdp
        .require(user.principal(), "project:view", ask, &fresh)
        .await?;
    state
        .repo
        .update_project(id, name.as_deref(), description.as_deref(), tags.as_ref())
        .await?;
    let fresh = written(&state, &fresh).await?;
    let project = state
        .repo
        .project(id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    Ok(Written::ok(fresh, json!(project)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Share {
    visibility: Option<String>,
    inherit_access: Option<bool>,
}

pub(crate) async fn share(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
    Json(body): Json<Share>,
) -> ApiResult<Written<Value>> {
    let id = parse_id("project_id", &id)?;
    let visibility = body.visibility.as_deref().map(visibility).transpose()?;
    let ask = Ask::new("project:share", Kind::Project, id);
    state
        .pdp
        .require(user.principal(), "project:view", ask, &fresh)
        .await?;
    state
        .repo
        .share_project(id, visibility.as_deref(), body.inherit_access)
        .await?;
    let fresh = written(&state, &fresh).await?;
    let project = state
        .repo
        .project(id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    Ok(Written::ok(fresh, json!(project)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Link {
    access: String,
}

pub(crate) async fn link_team(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path((id, team)): Path<(String, String)>,
    Json(body): Json<Link>,
) -> ApiResult<Written<Value>> {
    let id = parse_id("project_id", &id)?;
    let team = parse_id("team_id", &team)?;
    if !CAPS.contains(&body.access.as_str()) {
        return Err(ApiError::validation(
            "access",
            "access must be read, write or admin",
        ));
    }
    let ask = Ask::new("project:share", Kind::Project, id);
    state
        .pdp
        .require(user.principal(), "project:view", ask, &fresh)
        .await?;
    if state.repo.team(team).await?.is_none() {
        return Err(ApiError::NotFound("team"));
    }
    state.repo.link_team(id, team, &body.access).await?;
    let fresh = written(&state, &fresh).await?;
    let project = state
        .repo
        .project(id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    Ok(Written::ok(fresh, json!(project)))
}

pub(crate) async fn unlink_team(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path((id, team)): Path<(String, String)>,
) -> ApiResult<Written<()>> {
    let id = parse_id("project_id", &id)?;
    let team = parse_id("team_id", &team)?;
    let ask = Ask::new("project:share", Kind::Project, id);
    state
        .pdp
        .require(user.principal(), "project:view", ask, &fresh)
        .await?;
    if !state.repo.unlink_team(id, team).await? {
        return Err(ApiError::NotFound("team link"));
    }
    Ok(Written::no_content(written(&state, &fresh).await?))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Written<()>> {
    let id = parse_id("project_id", &id)?;
    let ask = Ask::new("project:delete", Kind::Project, id);
    state
        .pdp
        .require(user.principal(), "project:view", ask, &fresh)
        .await?;
    state.repo.delete_project(id).await?;
    Ok(Written::no_content(written(&state, &fresh).await?))
}

/// Direct children the caller may view.
pub(crate) async fn subprojects(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<Value>>> {
    let id = parse_id("project_id", &id)?;
    let ask = Ask::new("project:view", Kind::Project, id);
    state
        .pdp
        .require(caller, "project:view", ask, &fresh)
        .await?;
    let children = state.repo.subprojects(id).await?;
    let visible = state
        .pdp
        .filter(
            caller,
            "project:view",
            Kind::Project,
            children,
            |c| *c,
            &fresh,
        )
        .await?;
    let projects = state.repo.projects(&visible).await?;
    Ok(Json(Page::complete(
        projects.iter().map(|p| json!(p)).collect(),
    )))
}

/// The project's generations the caller may view, a page of candidates at a time.
pub(crate) async fn gallery(
    State(state): State<AppState>,
    Caller(caller): Caller,
    fresh: Freshness,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Page<Value>>> {
    let id = parse_id("project_id", &id)?;
    let limit = limit(query.limit, 50, 200)?;
    let cursor = parse_opt_id("cursor", query.cursor.as_deref())?;
    let ask = Ask::new("project:view", Kind::Project, id);
    state
        .pdp
        .require(caller, "project:view", ask, &fresh)
        .await?;
    let candidates = state
        .repo
        .project_generation_ids(id, cursor, i64::from(limit))
        .await?;
    let next_cursor = (candidates.len() == limit as usize)
        .then(|| candidates.last().map(Uuid::to_string))
        .flatten();
    let visible = state
        .pdp
        .filter(
            caller,
            "generation:view",
            Kind::Generation,
            candidates,
            |g| *g,
            &fresh,
        )
        .await?;
    let generations = state.repo.generations(&visible).await?;
    Ok(Json(Page {
        items: generations.iter().map(|g| json!(g)).collect(),
        next_cursor,
    }))
}

/// Move a generation into this project: `generation:transfer` on the generation and
/// `project:create_generation` here.
pub(crate) async fn transfer_in(
    State(state): State<AppState>,
    user: User,
    fresh: Freshness,
    Path((id, generation)): Path<(String, String)>,
) -> ApiResult<Written<Value>> {
    let id = parse_id("project_id", &id)?;
    let generation = parse_id("generation_id", &generation)?;
    let me = user.principal();
    let ask = Ask::new("generation:transfer", Kind::Generation, generation);
    state
        .pdp
        .require(me, "generation:view", ask, &fresh)
        .await?;
    let ask = Ask::new("project:create_generation", Kind::Project, id);
    state.pdp.require(me, "project:view", ask, &fresh).await?;
    state.repo.move_generation(generation, id).await?;
    let fresh = written(&state, &fresh).await?;
    let row = state
        .repo
        .generation(generation)
        .await?
        .ok_or(ApiError::NotFound("generation"))?;
    Ok(Written::ok(fresh, json!(row)))
}
